"""Jobs: run a provider call to its end (submit, poll or stream), within a deadline."""
