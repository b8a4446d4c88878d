"""Training algorithms: PPO and TRPO generators on one rollout path, GAIL (generator + discriminator), BC."""
