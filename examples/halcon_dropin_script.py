"""A heatmap script written for HALCON's Python interface, running on dlheatmap.

Everything in ``explain_images`` is written exactly as for HALCON's ``halcon`` module: the
operators with HALCON's argument order, dictionaries as handles, and HDevelop procedures
called through HDevEngine. The one change is the import line::

    import halcon as ha            # with HALCON
    import dlheatmap.halcon as ha  # with dlheatmap, on an ONNX model

Run it as it is to explain the demo images with the demo model, or give your own files:

    python examples/halcon_dropin_script.py [MODEL.onnx OUT_DIR IMAGE ...]

It writes, per image, the heatmap picture that dev_display_dl_data draws (PNG) and the raw
Grad-CAM heatmap as a real-valued TIFF, into OUT_DIR (default out/halcon_dropin/).
"""

import os
import sys

import dlheatmap.halcon as ha  # HALCON: import halcon as ha


def run_procedure(name, iconic_inputs, control_inputs):
    """Call an HDevelop procedure through HDevEngine; returns its control outputs by name."""
    procedure = ha.HDevProcedure.load_external(name)
    call = ha.HDevProcedureCall(procedure)
    for param_name, value in iconic_inputs.items():
        call.set_input_iconic_param_by_name(param_name, value)
    for param_name, value in control_inputs.items():
        call.set_input_control_param_by_name(param_name, value)
    call.execute()
    return {param_name: call.get_output_control_param_by_name(param_name)
            for param_name in procedure.output_control_param_names}


def explain_images(model_file, image_files, out_dir):
    engine = ha.HDevEngine()
    engine.set_procedure_path(os.path.join(os.environ.get("HALCONROOT", ""), "procedures"))

    model = ha.read_dl_model(model_file)
    ha.set_dl_model_param(model, "batch_size", 1)
    class_names = ha.get_dl_model_param(model, "class_names")
    width = ha.get_dl_model_param_s(model, "image_width")
    height = ha.get_dl_model_param_s(model, "image_height")
    print(f"model input {width} x {height}, classes {class_names}")

    preprocess_param = run_procedure(
        "create_dl_preprocess_param_from_model", {},
        {"DLModelHandle": model, "NormalizationType": "none", "DomainHandling": "full_domain",
         "SetBackgroundID": [], "ClassIDsBackground": [], "GenParam": []},
    )["DLPreprocessParam"]

    gen_param = ha.create_dict()
    ha.set_dict_tuple(gen_param, "use_conv_only", "true")
    display_param = ha.create_dict()
    ha.set_dict_tuple(display_param, "heatmap_color_scheme", "jet")
    windows = ha.create_dict()

    summary = []
    for index, image_file in enumerate(image_files):
        image = ha.read_image(image_file)
        samples = run_procedure("gen_dl_samples_from_images", {"Images": image},
                                {})["DLSampleBatch"]
        run_procedure("preprocess_dl_samples", {},
                      {"DLSampleBatch": samples, "DLPreprocessParam": preprocess_param})
        sample = samples[0]

        try:
            result = ha.gen_dl_model_heatmap_s(model, sample, "grad_cam", [], gen_param)
        except ha.HOperatorError as error:
            print(f"{image_file}: HALCON error {error.error_code}: {error}")
            continue
        class_id = ha.get_dict_tuple(result, "classification_class_ids")[0]
        class_name = ha.get_dict_tuple(result, "classification_class_names")[0]
        confidence = ha.get_dict_tuple(result, "classification_confidences")[0]
        heatmaps = ha.get_dict_tuple_s(result, "heatmap_grad_cam")
        heatmap = ha.get_dict_object(heatmaps, f"heatmap_image_class_{class_id}")
        ha.write_image(heatmap, "tiff", 0, os.path.join(out_dir, f"heatmap_{index}"))

        run_procedure("dev_display_dl_data", {},
                      {"DLSample": sample, "DLResult": result, "DLDatasetInfo": [],
                       "KeysForDisplay": "heatmap_grad_cam", "GenParam": display_param,
                       "WindowHandleDict": windows})
        window = ha.get_dict_tuple(windows, "heatmap_grad_cam")[0]
        ha.dump_window(window, "png", os.path.join(out_dir, f"overlay_{index}"))
        summary.append((image_file, class_name, confidence))
        print(f"{image_file}: {class_name} (ID {class_id}) {confidence:.3f}")

    ha.clear_dl_model(model)
    return summary


def main(argv):
    if len(argv) >= 3:
        model_file, out_dir, image_files = argv[0], argv[1], argv[2:]
    elif not argv:  # the demo model and images, made by examples/demo_model.py
        from pathlib import Path

        from demo_model import demo_model, write_demo_images

        out_dir = "out/halcon_dropin"
        model_file = str(demo_model(Path(__file__).with_name("models") / "shapes.onnx"))
        image_files = [str(p) for p in write_demo_images(Path(out_dir) / "images")]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    os.makedirs(out_dir, exist_ok=True)
    summary = explain_images(model_file, image_files, out_dir)
    print(f"{len(summary)} of {len(image_files)} images explained; pictures in {out_dir}/")
    return 0 if len(summary) == len(image_files) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
