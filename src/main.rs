fn main() {
    println!("winipam");
}
