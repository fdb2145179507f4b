"""The exceptions deepcompress raises for bad input."""


class FormatError(ValueError):
    """A compressed file (or a stream inside it) is damaged, truncated or not ours.

    The message says what is wrong and where: the section, the tensor and the byte offset
    when they are known.
    """
