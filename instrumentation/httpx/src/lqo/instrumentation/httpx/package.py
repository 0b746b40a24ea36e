# Either client library is enough: openai>=3 and anthropic>=2 ship on httpx2, ollama on httpx.
_instruments: tuple[str, ...] = ()
_instruments_any = ("httpx >= 0.23", "httpx2 >= 2.0")
