"""The supervisor that runs beside the training process (see ``supervisor``)."""
