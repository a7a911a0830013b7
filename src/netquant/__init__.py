"""netquant: network quantization towards the limit (Choi, El-Khamy, Lee, ICLR 2017).

The library is plain PyTorch/numpy and never imports Snakemake. Modules:

- ``data``        datasets prepared into in-memory tensors (MNIST, CIFAR-10, ImageNet folders, synthetic)
- ``models``      LeNet-5 (Caffe), ResNet-32 (CIFAR, option-A shortcuts), AlexNet (torchvision)
- ``checkpoint``  model files: state_dict + pruning masks + metadata
- ``train``       training and evaluation loops (masks held through training)
- ``prune``       magnitude pruning (Han et al. 2015)
- ``importance``  diagonal Hessian estimators and Adam second moments
- ``quantize``    k-means, Hessian-weighted k-means, uniform, ECSQ, DP solvers; apply to a model
- ``qmodel``      the quantized-model representation shared by quantize, finetune and container
- ``finetune``    fine-tuning of shared values with fixed assignments
- ``coding``      Huffman, fixed-length, ANS and index-difference codes
- ``container``   the compressed model file (.nqz)
- ``report``      tidy tables, Table 1 selection and figures
"""

__version__ = "0.1.0"
