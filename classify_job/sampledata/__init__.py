"""Built-in data: the procedural trouser/jeans photo generator, the demo, and Fashion-MNIST loading."""
