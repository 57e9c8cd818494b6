//! scene: sets the lights to a scene named in the plug-in's config.
//!
//! * `apply_scene` sets every light (listLights, updateLight) and answers
//!   `{"scene": "movie", "updated": 3}`;
//! * `light_after_create` sets a new light to the scene as well.
//!
//! Config: `scene` is `movie` (blue, 20 %) or `reading` (white, 100 %).
//! Grants: `listLights`, `updateLight`.

use hostwire_pdk::*;

struct Scene {
    name: String,
    color: Color,
    brightness: i64,
}

fn scene() -> Result<Scene, Error> {
    let name = config("scene").ok_or("config \"scene\" is not set (movie or reading)")?;
    let (color, brightness) = match name.as_str() {
        "movie" => (Color::Blue, 20),
        "reading" => (Color::White, 100),
        other => return Err(Error::new(format!("unknown scene \"{}\" (movie or reading)", other))),
    };
    Ok(Scene { name, color, brightness })
}

fn apply(scene: &Scene, light: &str) -> Result<Light, Error> {
    let change = LightUpdate {
        status: Some(Status::On),
        color: Some(scene.color),
        brightness: Some(scene.brightness),
        ..Default::default()
    };
    Ok(api::update_light(light, &change).into_result()?)
}

export!(apply_scene, |_: ()| {
    let scene = scene()?;
    let lights = api::list_lights().into_result()?.lights;
    for light in &lights {
        apply(&scene, &light.id)?;
    }
    log::info(format!("scene {}: {} lights", scene.name, lights.len()));
    Ok(json!({ "scene": scene.name, "updated": lights.len() }))
});

light_after_create!(|event| {
    let scene = scene()?;
    apply(&scene, &event.data.record.id)?;
    Ok(())
});
