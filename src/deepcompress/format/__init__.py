"""The `.dcz` file: the container (`container`, specified in docs/FORMAT.md), the one reader
(`reader`), the atomic writer (`writer`) and settings files (`config`)."""
