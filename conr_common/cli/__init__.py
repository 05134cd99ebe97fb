"""Command-line helpers (`args`) and the render options checked once (`options`)."""
