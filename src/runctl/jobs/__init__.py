"""The job lifecycle on AWS as a library: submit, follow, cancel (the CLI parses, calls and renders)."""
