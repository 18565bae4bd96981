"""The teacher: which model, how prompts are rendered, and the engines that write traces."""
