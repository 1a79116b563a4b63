"""Recovery on another machine: pure decisions from the job's status and its instance's state, and
(on AWS) their execution. Whether an attempt restarts in place is the agent's (``agent.restart_policy``)."""
