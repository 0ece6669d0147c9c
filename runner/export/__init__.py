"""Matched media IDs out of a run (`ids`), or every match through the API's export job (`live`)."""
