"""Dataset plugins: MNIST and its kin, SVHN and CIFAR, two moons, your own files."""
