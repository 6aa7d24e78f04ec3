"""The thin HTTP shell: FastAPI routes read raw bytes and call the use cases."""
