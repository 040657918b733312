#!/usr/bin/env bash
# The README shows examples/hello.c verbatim: fail when they drift apart.
#   readme_example.sh SOURCE_DIR
set -euo pipefail
diff <(awk '/^```c$/{f=1;next} /^```$/{if(f)exit} f' "$1/README.md") "$1/examples/hello.c"
