"""The write-behind writer (`orders-writer`): applies accepted status changes from the Redis
stream to PostgreSQL, exactly once in effect, in the order they were accepted."""
