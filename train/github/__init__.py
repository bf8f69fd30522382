"""Scrape Python repositories from the GitHub REST API into a corpus (see scrape.py)."""
