"""Where models come from: Hugging Face, ollama's store, and file metadata."""
