"""Tree -> committed Parquet: walk and shard, skip what is done, decode and predict in batches,
write parts under a lock, then summarise. Nothing here imports Keras until a model must run."""
