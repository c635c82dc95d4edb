{
  "targets": [
    {
      "target_name": "zerocopy",
      "sources": ["zerocopy.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "conditions": [["OS!='linux'", { "type": "none", "sources!": ["zerocopy.c"] }]]
    }
  ]
}
