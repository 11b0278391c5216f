// refinery embeds sql/migrations at compile time; a new migration file must rebuild core.
fn main() {
    println!("cargo:rerun-if-changed=../sql/migrations");
    println!("cargo:rerun-if-changed=../sql/roles.sql");
}
