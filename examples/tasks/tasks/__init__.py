"""tasks: a small FastAPI + SQLAlchemy service that hosts plug-ins through hostwire."""
