"""Recovery: pure decisions from the attempt history, and (on AWS) their execution."""
