"""The data path: image headers, the numpy + OpenCV pipeline, input checks, the built-in sample data."""
