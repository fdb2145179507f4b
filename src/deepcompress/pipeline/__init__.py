"""The experiment harness, apart from the library's core: the built-in models (`models`),
MNIST and the bundled digits (`data`), a plain training loop (`train`), the whole pipeline
(`reproduce`), and its report and figures (`report`, `figures`)."""
