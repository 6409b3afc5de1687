"""Background work: the huey queue and the download task."""
