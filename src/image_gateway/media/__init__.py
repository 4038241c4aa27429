"""Image bytes: fetch, convert, split, store."""
