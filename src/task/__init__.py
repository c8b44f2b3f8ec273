"""Tasks: the loss, the metrics and the batch layout of one kind of problem."""
