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
    # Evaluate the loaded teacher on the first test images before training and stop below the
    # floor: an untrained or mis-loaded teacher scores ~0 (or no detection: AP NaN), a trained
    # one far above 1. train.teacher_check.num_images=0 turns it off.
    teacher_check=dict(num_images=20, min_ap=1.0),
    unsafe_load=False,  # True (or --unsafe-load): full unpickle of trusted legacy checkpoints
    clip_grad=None,  # e.g. dict(max_norm=35) as the FGD / LSHFM recipes
)
