"""File formats: adapter files (safetensors), the .icmh bitstream container, image files, and the
reference implementation's checkpoints. Each module reads untrusted bytes and says clearly what
is wrong with them."""
