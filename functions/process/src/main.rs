#[tokio::main]
async fn main() -> Result<(), quiver::lambda::Error> {
    quiver::lambda::init();
    let state = process::Process::new(&quiver::Config::from_env()?)?;
    quiver::lambda::run(process::routes(state)).await
}
