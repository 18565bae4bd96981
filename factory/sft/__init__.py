"""Student fine-tuning: data and loss masks, pre-flight checks, the Ray Train loop, export."""
