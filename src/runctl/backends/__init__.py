"""Where an agent runs: locally (runctl.agent), on EC2 (aws), in Docker (docker)."""
