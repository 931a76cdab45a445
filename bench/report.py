"""What the benches write: `OUT.md`, the tables as printed, and `OUT.json`, every number behind them."""

import json


def write_report(out, text, data):
  """Writes `text` to `out + '.md'` and `data` (NumPy scalars as floats) to `out + '.json'`; says so."""
  with open(out + ".md", "w") as f:
    f.write(text)
  with open(out + ".json", "w") as f:
    json.dump(data, f, indent=1, default=float)
  print(f"wrote {out}.md and {out}.json")
