//! Fine-tuning: data loading, the rules settings and data must meet (`rules`), losses, the
//! optimizer and schedule, one step (`session`), the run (`run`), evaluators, checkpoints and the
//! model card. Knows nothing about terminals: progress leaves as
//! [`events::TrainEvent`]s over a channel.

pub mod augment;
pub mod beir;
pub mod card;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod events;
pub mod export_python;
pub mod losses;
pub mod optim;
pub mod rules;
pub mod run;
pub mod sampler;
pub mod session;
