pub mod support;

mod checks;
mod crash;
mod crashpoints;
mod dedupe;
mod diskfull;
mod dlqidentity;
mod hostile;
mod intake;
mod keys;
mod leader;
mod natskill;
mod outage;
mod pgbouncer;
mod policy;
mod rejections;
mod roles;
mod stall;
