fn main() {
    println!("diffuse");
}
