"""seedq: a distributed batch job queue that turns (image, prompt) spreadsheets into videos."""

__version__ = "0.1.0"
