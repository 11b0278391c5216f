pub mod pgserver;
pub mod support;

mod crash;
mod dedupe;
mod intake;
mod leader;
mod outage;
mod rejections;
mod roles;
