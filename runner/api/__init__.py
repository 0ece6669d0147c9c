"""The Explore API's client side.

Rooms: `client` (one aiohttp session: search, dataset and export-job calls, error
classification), `pages` (answers turned into Arrow columns), `auth` (JWT, credentials and the
one reader of the environment), `pacer` (the global rate limiter), `retry` (the one retry policy).
"""
