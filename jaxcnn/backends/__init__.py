"""Backend-specific ways of computing the typology's operations, kept apart from the typology itself.

`jaxcnn.conv` defines each operation as the short pure function a student reads (`conv` is XLA's
convolution, four lines). Where one XLA backend runs another formulation of the same numbers much
faster, that formulation lives here, in a folder per backend. The typology imports no backend: a
backend registers its formulations through the typology's one hook
(`jaxcnn.conv.nd.register_cpu_formulations`; `import jaxcnn` registers XLA:CPU's), and the typology
stages them when `impl="auto"` for a program compiled for that backend (`jaxcnn.conv.nd.on_cpu`:
`jax.lax.platform_dependent`, decided when the program is lowered for its platform):

- `xla_cpu/`: XLA:CPU. `formulations.py` (the registration), `policy.py` (what the choice is made
  for: the kernels, the malloc, the jaxlib version, read once by `jaxcnn.setup_process`; on an unknown
  jaxlib the backend steps aside), `convolution.py` (every formulation of `conv` and the choice among them),
  `transposed.py` (the sub-pixel transposed convolution), `pooling.py` (tiled max pooling),
  `xla_setup.py` (which kernels run XLA:CPU's convolutions, YNNPACK or Eigen) and `host_memory.py`
  (glibc's huge pages for XLA:CPU's large temporaries). The measurements behind each choice:
  bench/README.md.

GPU and TPU run the typology's own definitions: XLA compiles them to their native kernels, also when the
program is compiled for them on a CPU-only host (`--mode=compile`).
"""
