"""What runs behind the routes: the model pool, engine supervision, deadlines, metrics, the models cache."""
