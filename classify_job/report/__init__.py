"""Built from the Parquet output alone: summaries, the HTML report, the review rule, catalog tagging."""
