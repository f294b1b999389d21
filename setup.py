from setuptools import find_packages, setup

setup(
    name="visiondrop-llava",
    version="0.1.0",
    description="VisionDrop and baseline visual-token reduction methods in a LLaVA-compatible codebase",
    python_requires=">=3.10",
    packages=find_packages(include=["llava", "llava.*", "visiondrop", "visiondrop.*", "benchmarks", "benchmarks.*"]),
    install_requires=[
        "torch>=2.6",
        "transformers>=5.17,<5.25",  # tested: 5.17 (lowest) and 5.24 (newest), see .ci/run
        "tokenizers>=0.23.1,<0.24",
        "sentencepiece>=0.2.0,<0.2.3",
        "protobuf",
        "safetensors",
        "accelerate",
        "pillow",
        "numpy",
        "tqdm",
        "pyyaml",
        "shortuuid",
    ],
    extras_require={
        "eval": ["lmms-eval==0.7.3", "filelock<4", "openpyxl"],  # lmms-eval 0.7.3 imports filelock._api (gone in 4.x)
        "gpu": ["flash-attn"],
        "lora": ["peft>=0.21,<1"],
        "train": ["deepspeed>=0.16"],
        "video": ["av>=14"],
        "dev": ["pytest", "ruff", "triton>=3.6; platform_system == 'Linux'", "av>=14"],
    },
    entry_points={"lmms_eval.models": ["visiondrop_llava = llava.lmms:manifest"]},
)
