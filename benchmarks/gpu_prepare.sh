#!/usr/bin/env bash
# Prepares what benchmarks/gpu_suite.sh needs on a lent GPU machine that has no network and lacks some of our
# dependencies: wheels (Python 3.12, manylinux x86_64) and the Llama-2 tokenizer with [MASK], in ./.whl of the
# checkout that will be sent (ignored by git, named in the device call's `carry`). Run it from the repo root.
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"
mkdir -p .whl/tokenizer
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 jsonlines==4.0.0 \
  lm-eval==0.4.13 typing-extensions==4.16.0
TOKENIZER=${MEAP_TOKENIZER:-../shared/data/tokenizers/meap-llama}
cp "$TOKENIZER"/tokenizer.json "$TOKENIZER"/tokenizer_config.json "$TOKENIZER"/special_tokens_map.json .whl/tokenizer/
du -sh .whl
ls .whl
