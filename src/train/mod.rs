//! Fine-tuning: data loading and validation, losses, the optimizer and schedule, the training
//! loop, evaluators, checkpoints and saving. Knows nothing about terminals: progress leaves as
//! [`events::TrainEvent`]s over a channel.

pub mod card;
pub mod config;
pub mod data;
pub mod eval;
pub mod events;
pub mod losses;
pub mod optim;
pub mod run;
pub mod session;
