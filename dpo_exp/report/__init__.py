"""Reading run folders back: `dpo-exp compare` and the summary of a sweep."""
