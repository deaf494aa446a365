"""Real-time notifications for Django: stored in models, streamed as Server-Sent Events."""
