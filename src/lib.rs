pub mod pusher;
