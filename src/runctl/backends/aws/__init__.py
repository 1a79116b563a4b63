"""The AWS backend: pure request builders beside thin boto3 adapters."""
