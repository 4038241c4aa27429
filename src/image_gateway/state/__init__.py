"""Shared state for equal replicas: the Redis connection the engine, routing and API layers share when
REDIS_URL is set (state/redis.py). Unset, nothing here is imported and nothing connects."""
