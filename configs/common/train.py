# Training keys read by tools/train_net.py (see d2kd.engine.train_loop.do_train).
import torch

train = dict(
    output_dir="./output",
    init_checkpoint="",  # student (or plain model) weights; the teacher has its own
    max_iter=90000,
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=3),
    eval_period=5000,
    log_period=20,
    # CUDA when there is one; `train.device=cpu` forces the CPU.
    device="cuda" if torch.cuda.is_available() else "cpu",
    seed=0,  # seeds every RNG (+rank) and the resumable loader's shuffle and augmentation
    teacher_check=dict(num_images=0, min_ap=0.0),  # >0 images: evaluate the teacher first
    clip_grad=None,  # e.g. dict(max_norm=35) as the FGD / LSHFM recipes
)
