#pragma once
// A DiT run's checkpoints, written and read by every rank of any layout (train/sharded_checkpoint.h): the
// model (or a LoRA run's adapters), the EMA and post-hoc EMA profiles, the optimizer state (ZeRO-1: one piece
// per data-parallel rank) and, from rank 0, the trainer state (step, seed, RNG, data cursor). Internal to the
// trainer (trainer_session.h).

#include "train/checkpoint_store.h"
#include "train/trainer_session.h"

namespace mugv::dit_training {

// The current step's checkpoint, committed once every rank has written its files; keeps the newest
// --keep-checkpoints. Every rank returns the reference (only rank 0's has the metadata). Collective.
CheckpointRef save_checkpoint(Session& s, double loss);

// A snapshot of every post-hoc EMA profile at the current step (runs/R/ema_snapshots/step-N), all kept.
// Collective.
void save_ema_snapshot(Session& s);

// Loads one checkpoint, whatever layout wrote it, into the session's model, EMAs, optimizer and trainer
// state. Everything is read and checked before anything is copied: Error(invalid_argument) for another
// preset or optimizer, Error(corrupt) naming the checkpoint and the missing or misshapen tensor.
void load_checkpoint(Session& s, const CheckpointRef& ref);

}  // namespace mugv::dit_training
